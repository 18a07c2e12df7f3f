"""The local monitoring API (aiohttp, no Qt): served by the GUI app and the headless miner."""

from r3mes_desktop.api.app import create_app
from r3mes_desktop.api.auth import load_or_create_token
from r3mes_desktop.api.server import ApiConfig, ApiServer

__all__ = ["ApiConfig", "ApiServer", "create_app", "load_or_create_token"]
