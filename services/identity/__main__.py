from cjo_identity.bootstrap import build
from cjo_platform.rpc.server import main

main("identity", build)
