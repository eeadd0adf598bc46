from cjo_console.bootstrap import main

main()
