"""FedOTP as a Flower app: ``client_app`` (a node's client), ``server_app`` (the server's
rounds and run directory), ``privacy`` (in the clear, SecAgg+ or differential privacy) and
``records`` (what crosses the network). See docs/FLOWER.md."""
