"""Content addressing: local CID computation, the IPFS RPC client, the devnet's local store."""
