"""The agentless scanner's remote I/O against real Samba servers standing in for Windows hosts."""
