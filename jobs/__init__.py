"""Your job functions: plain module-level functions, scheduled as "jobs.<module>:<function>".

Each run happens inside the Flask app context: use `current_app`, its config and
the database session as in a request. Only public functions defined in this
package (see JOB_PACKAGES) can be scheduled through the API.
"""
