from bff_dev.openapi.document import main

main()
