from ttaeval.cli import main

main()
