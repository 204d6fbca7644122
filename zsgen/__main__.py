from zsgen.cli import main

raise SystemExit(main())
