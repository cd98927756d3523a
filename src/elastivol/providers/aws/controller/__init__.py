"""The aws provider's controller side: EBS volumes, attachments and snapshots through EC2, and EFS
access points. Only a controller process loads these; a node plugin never does."""
