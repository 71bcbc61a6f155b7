"""The agentless scanner: reads a Windows host's documented RMS facts remotely (MS-RRP over SMB
named pipes, files over the administrative shares) with the same mapping as the local probe.

Its dependencies (impacket, pefile) come with the `scanner` extra; importing this package
needs nothing beyond the agent's own install, `remote` imports them when first used.
"""
