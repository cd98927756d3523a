from elastivol.cli import main

main()
