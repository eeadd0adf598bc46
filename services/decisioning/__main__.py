from cjo_decisioning.bootstrap import build
from cjo_platform.rpc.server import main

main("decisioning", build)
