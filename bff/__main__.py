from bff.cli import main

raise SystemExit(main())
