"""Command-line tools shipped with emoserve (installed as ``emoserve.tools``): proto generation, reference
recorders, parity report, benchmark."""
