from parity_common import parity_weights  # noqa: F401  (session fixture shared by every parity test)
