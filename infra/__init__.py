"""Where it runs: stack settings, the pure serving plan, and the Pulumi resources built from it."""
