from agent.cli.console import main

main()
