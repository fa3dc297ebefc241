"""What the model answered, read: layout cells (`cells`), Markdown (`markdown`), HTML tables (`tables`), and the
answer in the form the prompt promises (`formatting.format_answer`), for every engine alike."""
