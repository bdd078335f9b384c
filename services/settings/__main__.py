from services.settings.app import main

main()
