"""Fault injection: each guarantee of issue 4 proven by forcing its failure."""
