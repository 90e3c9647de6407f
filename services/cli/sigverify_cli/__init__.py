"""The ``sigverify`` command: for county clerks, campaign staff, ops engineers and admins."""
