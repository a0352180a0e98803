from kept.cli import main

main()
