from bulwark_vpn.cli import main

main()
