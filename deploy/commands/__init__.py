"""The commands a deploy runs on a target, as argument lists: built here, run by deploy.target.

Pure functions, so tests compare whole commands without a host; the parser of a command's output
sits beside the command. Nothing else in deploy/ builds an argument list (but deploy/facts.py, the
host facts script beside its parser, and deploy/target.py, the executor): tests/test_architecture.py
checks it. By tool:

    certbot   certificates: certbot, what a certificate says, name resolution
    firewall  ufw, modelhost's nftables table, the session's SSH port, the safety timer
    fs        files, directories, links, tar files
    host      services, apt, users, Python environments, processes
    nginx     the local target's own nginx or a host's; checks in a scratch directory
    programs  supervisor (the local target's own supervisord or a host's), systemd units, gunicorn's check
    probe     HTTP checks run on the target (deploy/probe.py)
    snapshot  all a deploy needs to see that it has nothing to do, in one command
    ssh       fab expose's tunnel: its key pair, ssh -R, the relay's sshd and authorized_keys
    git       what a release ships, read on the machine that runs `fab`
"""
from deploy.commands.certbot import (CertificateInfo, acme_directory, certbot_delete, certificate_info, certonly,
                                     parse_certificate_info, parse_resolve, resolve)
from deploy.commands.fs import (append_line, cat, cat_releases, ensure_directories, exists, exists_or_dangling_link,
                                install, keep_files, keep_paths, link_missing, listing, make_directory, move,
                                parse_ensure_directories, parse_links, parse_sums, read_links, remove, restrict, size,
                                sums, symlink, tail, tail_bytes, tar_create, tar_extract, temporary_file, touch)
from deploy.commands.firewall import (apt_candidates, cancel_undo, firewall_read, nft_check, nft_list, nft_off,
                                       nft_ruleset, nft_service_load, parse_candidates, parse_firewall, parse_nft,
                                       parse_rule, parse_rules, parse_ssh_connection, read_rule_files, rules_text,
                                       ssh_connection, ufw_allow, ufw_default, ufw_delete, ufw_disable, ufw_enable,
                                       undo_later)
from deploy.commands.git import archive, changed_files, git, stash_commit
from deploy.commands.host import (CLEAN_PATH, WITH_SECRETS, add_system_user, add_to_group, alive, apt_get, as_app, delete_user, kill_user,
                                  children, crontab, groups, has_command, logrotate_check, make_venv,
                                  memory_of, missing_for_deploy, missing_packages, now, passwd_entry, passwordless_sudo,
                                  pip, pip_install, pip_wheels_only, process_state, running, working_directory, python_projects, python_has_venv, service, session, signal_session, user_id)
from deploy.commands.nginx import locate, nginx, nginx_check, nginx_start, self_signed, sites_of, supervised_nginx
from deploy.commands.probe import PROBE_SOURCE, parse_probe, probe
from deploy.commands.ssh import (ALIVE_COUNT, ALIVE_INTERVAL, TUNNEL_SOURCE, authorized_line, keygen, listening_ports,
                                 machine_name, parse_authorized, sshd_check, tunnel)
from deploy.commands.programs import (SUPERVISOR_PARSE, SUPERVISOR_START, TOOLS, UNIT_PROPERTIES, UNIT_STATES, calendar_check,
                                      first_lines, gunicorn_check, journal, parse_first_lines, parse_group_status, parse_read_files,
                                      parse_supervisor_status, parse_supervisord_pid, parse_timer_times,
                                      parse_unit_status, program, program_status, programs, programs_status, read_files,
                                      split_programs_status, start_program, supervisor_error,
                                      supervisor_parse, supervisor_refused, supervisorctl, supervisord_start,
                                      systemctl, systemd_manager, systemd_verify, timer_times, unit_journal)
from deploy.commands.snapshot import snapshot
