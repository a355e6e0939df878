"""An Ewoks workflow with ewokscore ``class`` tasks, run by aioflow through the ewoks front end."""
