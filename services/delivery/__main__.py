from cjo_delivery.bootstrap import build
from cjo_platform.collector import collect_rarely
from cjo_platform.rpc.server import main

# BatchSendMessages and the send rounds build many short-lived containers per message (see
# cjo_platform.collector).
collect_rarely()

main("delivery", build)
