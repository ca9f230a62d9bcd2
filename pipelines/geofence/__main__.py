from pipelines.geofence.pipeline import main

main()
