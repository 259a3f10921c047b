from heapsnap.cli import entry

entry()
