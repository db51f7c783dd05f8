from skillmix.cli import main

main()
