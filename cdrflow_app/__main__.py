from cdrflow_app.cli import main

main()
