from services.tokens.app import main

main()
