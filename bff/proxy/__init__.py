"""The forwarding proxy: the route table (what may be forwarded where, with which credentials) and the forwarder."""
