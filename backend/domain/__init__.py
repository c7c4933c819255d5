"""The rules of the product, free of I/O: labels, data splits, pre-label policy, queue."""
