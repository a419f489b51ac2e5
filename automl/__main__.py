from automl.cli.main import main

main()
