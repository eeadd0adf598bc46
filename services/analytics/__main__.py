from cjo_analytics.bootstrap import build
from cjo_platform.rpc.server import main

main("analytics", build)
