from cjo_decisioning.bootstrap import build
from cjo_platform.collector import collect_rarely
from cjo_platform.rpc.server import main

# A BatchDecide of 100 allocates some 30,000 short-lived containers (candidates, log rows,
# reply messages): at the default threshold the cyclic collector ran some forty times a call and
# took a fifth of the process's CPU (issue 14; cjo_platform.collector).
collect_rarely()

main("decisioning", build)
