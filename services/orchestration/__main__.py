from cjo_orchestration.bootstrap import build
from cjo_platform.rpc.server import main

main("orchestration", build)
