"""The strict parsers: text from anywhere (flags, environment, TOML, files, HTTP bodies, discovery
answers) becomes a typed value here, once, through the one parser of its kind, or is refused with an
InputError naming the value and the fix.

Every parser matches the whole value (`re.fullmatch`), refuses control characters and line or
paragraph separators, and never relies on `ipaddress` alone for untrusted text (it accepts any zone id
after `%`, newlines included).
"""
