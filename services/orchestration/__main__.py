from cjo_orchestration.bootstrap import build
from cjo_platform.collector import collect_rarely
from cjo_platform.rpc.server import main

# The step round builds many short-lived containers per timer fired (see cjo_platform.collector).
collect_rarely()

main("orchestration", build)
