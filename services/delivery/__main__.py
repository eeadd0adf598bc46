from cjo_delivery.bootstrap import build
from cjo_platform.rpc.server import main

main("delivery", build)
