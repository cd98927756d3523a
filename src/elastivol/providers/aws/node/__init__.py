"""The aws provider's node side: finding an attached EBS volume's NVMe device, and mounting EFS.
Nothing here calls the EC2 API or imports the controller side."""
