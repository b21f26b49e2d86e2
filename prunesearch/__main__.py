from prunesearch._entry import main

main()
