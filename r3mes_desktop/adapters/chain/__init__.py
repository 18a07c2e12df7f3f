"""Chain adapters: the R3mesRounds contract, its artifact, and the web3 chain client."""
