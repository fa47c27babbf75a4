output "public_ip" {
  description = "The gateway's Elastic IP: clients' Endpoint host."
  value       = aws_eip.bulwark.public_ip
}

output "instance_id" {
  description = "The EC2 instance running Bulwark."
  value       = aws_instance.bulwark.id
}

output "vpc_cidr" {
  description = "The VPC network that peers reach through the tunnel."
  value       = local.vpc_cidr
}

output "peer_config_command" {
  description = "How to fetch a peer's configuration (replace NAME)."
  value       = "ssh admin@${aws_eip.bulwark.public_ip} sudo bulwark peer show NAME"
}

output "bootstrap_log_command" {
  description = "How to follow the first-boot installation."
  value       = "ssh admin@${aws_eip.bulwark.public_ip} sudo tail -f /var/log/cloud-init-output.log"
}
