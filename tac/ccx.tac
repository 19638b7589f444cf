# Run with: twistd -ny tac/ccx.tac
# Settings come from the TOML file named by CCX_CONFIG (the same names as the
# twistd ccx options), if it is set.
import os

from twisted.application.service import Application

from ccx.config import build_config, read_toml
from ccx.service import CCXService

path = os.environ.get("CCX_CONFIG")
config = build_config(read_toml(path) if path else {})

application = Application("ccx")
CCXService(config).setServiceParent(application)
