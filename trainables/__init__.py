"""Inside a trial: the RRA model, its data, the training loop, the Ray trainables (RRA and the
replay of recorded curves) and the one-run command line. Never imports `study`."""
