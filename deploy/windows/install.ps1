#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Installs (or removes) the rmsfleet agent as a Windows service, wrapped by WinSW.

.DESCRIPTION
    Needs the agent installed first (docs/windows-agent-service.md):
        py -3.11 -m venv "C:\Program Files\rmsfleet\venv"
        & "C:\Program Files\rmsfleet\venv\Scripts\pip.exe" install rmsfleet
    and WinSW's x64 build (WinSW-x64.exe) from its release page, passed as -WinSW.

    Copies WinSW to <InstallDir>\service\rmsfleet-agent-service.exe, writes
    rmsfleet-agent-service.xml next to it from rmsfleet-agent.xml (the paths and account set from
    the parameters), lets the service account write the agent's data and log folders, then
    installs and starts the service "rmsfleet-agent".

    The service runs as LocalSystem by default, the account docs/agent.md assumes: the probe reads
    HKLM and every user profile (per-user activation, D17). -Account LocalService runs it with
    fewer rights; it is then given write access to -DataDir (the outbox and the logs live there).

.EXAMPLE
    .\install.ps1 -WinSW C:\Temp\WinSW-x64.exe

.EXAMPLE
    .\install.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [string] $WinSW,
    [string] $InstallDir = (Join-Path $env:ProgramFiles 'rmsfleet'),
    [string] $DataDir = (Join-Path $env:ProgramData 'rmsfleet'),
    [ValidateSet('LocalService', 'LocalSystem')]
    [string] $Account = 'LocalSystem',
    [switch] $Uninstall
)

$ErrorActionPreference = 'Stop'

$serviceDir = Join-Path $InstallDir 'service'
$wrapper = Join-Path $serviceDir 'rmsfleet-agent-service.exe'
$wrapperXml = Join-Path $serviceDir 'rmsfleet-agent-service.xml'
$agentExe = Join-Path $InstallDir 'venv\Scripts\rmsfleet-agent.exe'
$configFile = Join-Path $DataDir 'agent.toml'
$logDir = Join-Path $DataDir 'logs'

function Invoke-WinSW([string] $Command) {
    & $wrapper $Command
    if ($LASTEXITCODE -ne 0) { throw "rmsfleet-agent-service.exe $Command failed (exit code $LASTEXITCODE)" }
}

if ($Uninstall) {
    if (-not (Test-Path $wrapper)) { throw "No WinSW wrapper at ${wrapper}: nothing to uninstall" }
    & $wrapper stop
    Invoke-WinSW 'uninstall'
    Write-Host "Removed the rmsfleet-agent service. The outbox and logs stay in $DataDir."
    return
}

if (-not $WinSW) { throw 'Pass -WinSW <path to WinSW-x64.exe>' }
if (-not (Test-Path $WinSW)) { throw "WinSW not found at $WinSW" }
if (-not (Test-Path $agentExe)) {
    throw "rmsfleet-agent not found at ${agentExe}: install the agent into $InstallDir\venv first"
}

New-Item -ItemType Directory -Force -Path $serviceDir, $DataDir, $logDir | Out-Null
if (-not (Test-Path $configFile)) {
    Write-Warning "No agent configuration at $configFile yet: the service will fail until it exists."
}

# The service account writes the outbox (the agent's state directory, -DataDir by default) and
# the logs. LocalService is S-1-5-19 (a SID, so that this works on any Windows language).
if ($Account -eq 'LocalService') {
    & icacls.exe $DataDir /grant '*S-1-5-19:(OI)(CI)M' | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls failed on $DataDir (exit code $LASTEXITCODE)" }
}

Copy-Item -Force -Path $WinSW -Destination $wrapper

[xml] $xml = Get-Content -Raw -Path (Join-Path $PSScriptRoot 'rmsfleet-agent.xml')
$service = $xml.SelectSingleNode('/service')
$service.SelectSingleNode('executable').InnerText = $agentExe
$service.SelectSingleNode('arguments').InnerText = "--config `"$configFile`""
$service.SelectSingleNode('workingdirectory').InnerText = $DataDir
$service.SelectSingleNode('logpath').InnerText = $logDir
if ($Account -eq 'LocalService') {
    $serviceAccount = $service.SelectSingleNode('serviceaccount')
    $domain = $xml.CreateElement('domain')
    $domain.InnerText = 'NT AUTHORITY'
    [void] $serviceAccount.PrependChild($domain)
    $serviceAccount.SelectSingleNode('user').InnerText = 'LocalService'
}
$xml.Save($wrapperXml)

Invoke-WinSW 'install'
Invoke-WinSW 'start'
Write-Host "Installed and started the rmsfleet-agent service (account $Account). Logs: $logDir"
