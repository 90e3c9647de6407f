"""SigVerify matching: a printed petition signature against the voter roll."""
