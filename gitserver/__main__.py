from gitserver.cli import main

raise SystemExit(main())
