"""The real ST-LIC codec: ``.stlic`` container, model fingerprint, file-level encode/decode."""
from stlic.codec.bitstream import BitstreamError, Container, parse_container, write_container
from stlic.codec.fingerprint import model_fingerprint

__all__ = ["BitstreamError", "Container", "parse_container", "write_container", "model_fingerprint"]
