"""How the miner names where it is connected: the joined network's name, and the chain id
and contract of the client that connected."""

from __future__ import annotations

from dataclasses import dataclass

from r3mes_desktop.app.builders import network_label
from r3mes_desktop.support.config import Settings

CONTRACT = "0x12Ab" + "00" * 16 + "cdef"


@dataclass
class Connected:
    chain_id: int = 1337
    contract_address: str = CONTRACT


def test_a_joined_network_is_named_with_its_chain_and_contract() -> None:
    settings = Settings(
        chain_rpc_urls=("http://127.0.0.1:8545",),
        contract_address=CONTRACT,
        ipfs_api_address="/ip4/127.0.0.1/tcp/5001",
        network_name="testnet",
    )
    label = network_label(settings=settings, chain=Connected())
    assert label == "testnet (chain 1337), contract 0x12Ab…cdef"


def test_the_devnet_and_an_unnamed_network() -> None:
    assert network_label(settings=Settings(), chain=Connected(chain_id=5)).startswith(
        "the embedded devnet (chain 5), contract "
    )
    unnamed = Settings(chain_rpc_urls=("http://127.0.0.1:8545",))
    assert network_label(settings=unnamed, chain=object()) == "the network"
