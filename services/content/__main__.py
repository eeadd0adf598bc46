from cjo_content.bootstrap import build
from cjo_platform.rpc.server import main

main("content", build)
