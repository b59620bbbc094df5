from seedlings.cli import main

raise SystemExit(main())
