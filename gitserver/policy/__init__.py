"""Pure rules: who may do what (access), what a name may be (names), the one error tree,
and the SSH algorithms the daemon offers. Nothing here does I/O beyond a query it is handed."""
