import gc

from cjo_decisioning.bootstrap import build
from cjo_platform.rpc.server import main

# A BatchDecide of 100 allocates some 30,000 short-lived containers (candidates, log rows,
# reply messages): at the default threshold (700) the cyclic collector ran some forty times a
# call and took a fifth of the process's CPU (issue 14). Nothing here builds reference cycles
# worth collecting early; young objects are collected every 50,000 allocations instead.
gc.set_threshold(50_000, 20, 20)

main("decisioning", build)
