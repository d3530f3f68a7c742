"""`chatops` at the terminal: every command, the gate's questions asked on the terminal."""
