' collect-rms-facts.vbs: write this host's RMS facts as an rmsfleet facts file (design.md,
' contract 1) into a folder that `rmsfleet-agent spool` watches (docs/collect-script.md).
'
' Runs with what Windows 2000, XP and Server 2003 have built in: cscript and VBScript,
' WScript.Shell (RegRead, Run), Scripting.FileSystemObject (GetFileVersion) and WMI's StdRegProv
' to list registry keys, or reg.exe when WMI cannot (reg.exe: built into XP and 2003, on
' Windows 2000 from the Support Tools).
'
'   cscript //nologo collect-rms-facts.vbs [/out:FOLDER] [/forest:NAME] [/host_id:ID]
'       [/hostname:NAME] [/server_cluster:URL] [/client_cluster:URL] [/ini:FILE] [/log:FILE]
'       [/registry:auto|wmi|reg] [/print]
'
' Settings not given as arguments come from collect-rms-facts.ini beside the script (or /ini:).
'
' It reads only what domain.md documents ("Where the facts live on a Windows host", "Versions as
' a probe can read them") and keeps the same rules as the agent's shared mapping
' (agent/rmsfleet/agent/probe/documented.py); each rule below names its fact id. What no
' documented value gives (the host's forest, cluster URLs, msdrm.dll version rules) comes from
' the arguments or the .ini, never from a guess.
'
' Exit codes: 0 facts written; 2 bad arguments or .ini; 3 no RMS server or client here (nothing
' written); 4 the facts file cannot be written; 5 an RMS server whose cluster cannot be told
' (nothing written: set server_cluster); 6 a documented value cannot be read or is malformed.

Option Explicit

Const HKLM = &H80000002
Const EXIT_OK = 0
Const EXIT_CONFIG = 2
Const EXIT_NO_RMS = 3
Const EXIT_WRITE = 4
Const EXIT_CLUSTER = 5
Const EXIT_READ = 6

' Documented locations (domain.md, "Where the facts live on a Windows host").
Const DRMS_KEY = "SOFTWARE\Microsoft\DRMS\1.0"
Const KEY_PROTECTION = "KeyProtection"
Const SERVICES_KEY = "SYSTEM\CurrentControlSet\Services"
Const UDRM_KEY = "SOFTWARE\Microsoft\uDRM"
Const SERVICE_LOCATION_KEY = "SOFTWARE\Microsoft\MSDRM\ServiceLocation"
Const WINDOWS_NT_KEY = "SOFTWARE\Microsoft\Windows NT\CurrentVersion"
Const PROFILE_LIST_KEY = "SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList"
Const UNINSTALL_KEY = "SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
Const TCPIP_KEY = "SYSTEM\CurrentControlSet\Services\Tcpip\Parameters"
' Cc747749 (KB917275): the SP2 client's Windows Installer product.
Const SP2_CLIENT_PRODUCT = "Windows Rights Management Client with Service Pack 2"
Const URN_PREFIX = "urn:rmsfleet:cluster:"

Dim fso, shell, settings, clusterUrls, serverRules, clientRules, knownServerRules
Dim notes, logFile, registryMode, wmiRegistry, regCache, iniPath, printOnly, consoleHost

Set fso = CreateObject("Scripting.FileSystemObject")
Set shell = CreateObject("WScript.Shell")
Set settings = NewDict()
Set clusterUrls = NewDict()
Set serverRules = NewDict()
Set clientRules = NewDict()
Set knownServerRules = NewDict()
Set notes = NewDict()
Set regCache = NewDict()
Set wmiRegistry = Nothing
logFile = ""
printOnly = False
' wscript.exe (the default host of a logon script) would show every line in a message box.
consoleHost = (LCase(fso.GetFileName(WScript.FullName)) = "cscript.exe")

' The server assembly Plugin.DirectoryServices: the versions [MS-RMPRS] 2.3.1.2 names.
knownServerRules("1.0.3246.0") = "RTM"
knownServerRules("5.2.3790.134") = "SP1"
knownServerRules("5.2.3790.300") = "SP2"

Main

' --- the run ---------------------------------------------------------------------------------------

Sub Main()
    Dim windowsVersion, server, client, hostId, hostName, forest, document, target
    Randomize
    ReadSettings
    registryMode = LCase(Setting("registry", "auto"))
    If registryMode <> "auto" And registryMode <> "wmi" And registryMode <> "reg" Then
        Fail EXIT_CONFIG, "/registry: expected auto, wmi or reg, got """ & registryMode & """"
    End If
    hostId = LCase(Setting("host_id", ""))
    hostName = LCase(Setting("hostname", ""))
    If hostId = "" Or hostName = "" Then DefaultIdentity hostId, hostName
    forest = LCase(Setting("forest", ""))
    If forest = "" Then
        Fail EXIT_CONFIG, "no forest: pass /forest:NAME or set forest under [host] in " & iniPath & _
            " (the Active Directory forest is not read from the host: a child domain is not its forest)"
    End If
    If Not printOnly And Setting("out", "") = "" Then
        Fail EXIT_CONFIG, "no output folder: pass /out:FOLDER or set folder under [output] in " & iniPath
    End If

    windowsVersion = WindowsMajor()
    Set server = ReadServer()
    Set client = ReadClient(windowsVersion)
    NotePreProduction Not server Is Nothing
    If server Is Nothing And client Is Nothing Then
        Fail EXIT_NO_RMS, "no RMS server (" & DRMS_KEY & " does not exist) and no RMS client (no " & _
            MsdrmPath() & ", no Uninstall entry """ & SP2_CLIENT_PRODUCT & """): nothing to report"
    End If
    document = FactsJson(hostId, hostName, forest, server, client)
    If printOnly Then
        Say document
        WScript.Quit EXIT_OK
    End If
    target = WriteFacts(Setting("out", ""), hostId, document)
    Say "wrote " & target
    WScript.Quit EXIT_OK
End Sub

' --- settings: arguments over the .ini ---------------------------------------------------------------

Sub ReadSettings()
    Dim i, arg, colon, name, value, given
    Set given = NewDict()
    ' WScript.Arguments.Named is not used: parsing /name:value here works on every script host.
    For i = 0 To WScript.Arguments.Count - 1
        arg = WScript.Arguments(i)
        If Left(arg, 1) <> "/" Then Fail EXIT_CONFIG, "unexpected argument """ & arg & """: settings are /name:value"
        colon = InStr(arg, ":")
        If colon = 0 Then
            name = LCase(Mid(arg, 2))
            value = ""
        Else
            name = LCase(Mid(arg, 2, colon - 2))
            value = Mid(arg, colon + 1)
        End If
        Select Case name
            Case "out", "forest", "host_id", "hostname", "server_cluster", "client_cluster", "ini", "log", "registry"
                given(name) = value
            Case "print"
                printOnly = True
            Case Else
                Fail EXIT_CONFIG, "unknown argument /" & name & _
                    "; known: /out /forest /host_id /hostname /server_cluster /client_cluster /ini /log /registry /print"
        End Select
    Next
    If given.Exists("ini") Then
        iniPath = given("ini")
        If Not fso.FileExists(iniPath) Then Fail EXIT_CONFIG, "/ini: " & iniPath & " does not exist"
    Else
        iniPath = fso.BuildPath(fso.GetParentFolderName(WScript.ScriptFullName), _
            fso.GetBaseName(WScript.ScriptFullName) & ".ini")
    End If
    If fso.FileExists(iniPath) Then ReadIni iniPath
    For Each name In given.Keys
        settings(name) = given(name)
    Next
    If settings.Exists("log") Then logFile = Expand(settings("log"))
End Sub

Sub ReadIni(path)
    Dim stream, line, number, section, equals, key, value, where
    section = ""
    number = 0
    Set stream = OpenText(path)
    Do While Not stream.AtEndOfStream
        line = Trim(Replace(stream.ReadLine, vbTab, " "))
        number = number + 1
        ' Notepad's UTF-8 byte order mark, read as ANSI.
        If number = 1 And Left(line, 3) = Chr(239) & Chr(187) & Chr(191) Then line = Trim(Mid(line, 4))
        where = path & ":" & number & ": "
        If line = "" Or Left(line, 1) = ";" Or Left(line, 1) = "#" Then
            ' a comment
        ElseIf Left(line, 1) = "[" And Right(line, 1) = "]" Then
            section = LCase(Trim(Mid(line, 2, Len(line) - 2)))
            Select Case section
                Case "host", "output", "clusters", "versions.server", "versions.client", "windows"
                Case Else
                    Fail EXIT_CONFIG, where & "[" & section & "]: unknown section; known sections: [host], " & _
                        "[output], [clusters], [versions.server], [versions.client], [windows]"
            End Select
        Else
            equals = InStr(line, "=")
            If equals = 0 Or section = "" Then Fail EXIT_CONFIG, where & "expected key = value under a [section]"
            key = Unquote(Left(line, equals - 1))
            value = Unquote(Mid(line, equals + 1))
            Select Case section
                Case "clusters"
                    AddCluster where, key, value
                Case "versions.server"
                    AddRule serverRules, where, "[versions.server]", key, value
                Case "versions.client"
                    AddRule clientRules, where, "[versions.client]", key, value
                Case Else
                    SetFromIni where, section, LCase(key), value
            End Select
        End If
    Loop
    stream.Close
End Sub

Sub SetFromIni(where, section, key, value)
    Dim allowed
    Select Case section
        Case "host"
            allowed = "|host_id|hostname|forest|server_cluster|client_cluster|"
        Case "output"
            allowed = "|folder|log|registry|"
        Case "windows"
            allowed = "|server_assembly_folders|server_assembly_suffix|kernel|msdrm|profile_certificate|" & _
                "builtin_profile_certificate|rtm_machine_certificate|"
    End Select
    If InStr(allowed, "|" & key & "|") = 0 Then
        Fail EXIT_CONFIG, where & "[" & section & "] " & key & ": unknown key; known keys: " & _
            Replace(Mid(allowed, 2, Len(allowed) - 2), "|", ", ")
    End If
    If value = "" Then Exit Sub
    ' Environment variables are expanded, so one .ini serves every host (%COMPUTERNAME%).
    value = Expand(value)
    If section = "output" And key = "folder" Then key = "out"
    settings(key) = value
End Sub

Sub AddCluster(where, key, value)
    ' "<cluster name>:<port>" as in DRMS_Config_<cluster name>_<port> = the cluster's URL.
    Dim colon, name, port
    colon = InStrRev(key, ":")
    If colon > 1 Then
        name = LCase(Trim(Left(key, colon - 1)))
        port = Mid(key, colon + 1)
    End If
    If colon <= 1 Or Not IsPort(port) Then
        Fail EXIT_CONFIG, where & "[clusters] """ & key & """: expected ""<cluster name>:<port>"" as in " & _
            "DRMS_Config_<cluster name>_<port>"
    End If
    If NormalizeUrl(value) = "" Then Fail EXIT_CONFIG, where & "[clusters] """ & key & """: expected a URL, got """ & value & """"
    clusterUrls(name & ":" & CLng(port)) = value
End Sub

Sub AddRule(rules, where, section, key, value)
    If Not IsDotted(key) Then
        Fail EXIT_CONFIG, where & section & " """ & key & """: expected a dotted version prefix such as 5.2.3790"
    End If
    Select Case UCase(value)
        Case "RTM", "SP1", "SP2", "UNKNOWN"
            rules(key) = UCase(value)
        Case Else
            Fail EXIT_CONFIG, where & section & " """ & key & """: expected one of RTM, SP1, SP2, UNKNOWN, got """ & value & """"
    End Select
End Sub

Function Setting(name, default)
    If settings.Exists(name) Then
        Setting = Trim(settings(name))
    Else
        Setting = default
    End If
End Function

Function Unquote(text)
    Dim value
    value = Trim(text)
    If Len(value) >= 2 And Left(value, 1) = """" And Right(value, 1) = """" Then value = Mid(value, 2, Len(value) - 2)
    Unquote = value
End Function

Sub DefaultIdentity(ByRef hostId, ByRef hostName)
    ' As the agent's local probe: Tcpip\Parameters Hostname (lower-cased) and Hostname.Domain.
    Dim name, domain
    name = LCase(TextValue(TCPIP_KEY, "Hostname"))
    domain = LCase(TextValue(TCPIP_KEY, "Domain"))
    If domain = "" Then domain = LCase(TextValue(TCPIP_KEY, "NV Domain"))
    If name = "" Then Fail EXIT_CONFIG, "no host id: " & TCPIP_KEY & " has no Hostname; pass /host_id:ID and /hostname:NAME"
    If hostId = "" Then hostId = name
    If hostName = "" Then
        If domain = "" Then hostName = name Else hostName = name & "." & domain
    End If
End Sub

' --- Windows (D15) ----------------------------------------------------------------------------------

Function WindowsMajor()
    ' The kernel's file version, else Windows NT\CurrentVersion CurrentVersion. -1: unknown.
    Dim kernel, version, parts
    WindowsMajor = -1
    kernel = Expand(Setting("kernel", "%SystemRoot%\system32\ntoskrnl.exe"))
    version = FileVersion(kernel)
    If version = "" Then version = TextValue(WINDOWS_NT_KEY, "CurrentVersion")
    If IsDotted(version) Then
        parts = Split(version, ".")
        WindowsMajor = CLng(parts(0))
    Else
        AddNote "the Windows version cannot be read (no version resource in " & kernel & ", no " & _
            WINDOWS_NT_KEY & " CurrentVersion): the RMS client is looked for as on Windows before Vista"
    End If
End Function

' --- server ----------------------------------------------------------------------------------------

Function ReadServer()
    ' D15: RMS 1.0 servers are 32-bit, so on 64-bit Windows the key is under WOW6432Node.
    Dim key, version, root, kind, subEnrollment, cluster, enrollment, server
    Set ReadServer = Nothing
    key = SoftwareKey(DRMS_KEY)
    If Not KeyExists(key) Then Exit Function
    version = ServerVersion()
    kind = "root-certification"
    root = ""
    subEnrollment = TextValue(key, "SubEnrollmentURL")
    If subEnrollment <> "" Then
        ' D16: a licensing-only server names its root certification cluster here.
        root = NormalizeUrl(subEnrollment)
        If root = "" Then Fail EXIT_READ, key & " SubEnrollmentURL: expected a URL, got """ & subEnrollment & """"
        kind = "licensing"
    End If
    cluster = ServerCluster(key)
    If root <> "" And root = cluster Then
        Fail EXIT_READ, key & " SubEnrollmentURL names " & root & ", which is this server's own cluster: check " & _
            "[clusters] and server_cluster"
    End If
    ' D9: only SP1 and later enroll offline; UNKNOWN claims no capability it cannot confirm.
    If version = "SP1" Or version = "SP2" Then enrollment = "offline" Else enrollment = "online"
    Set server = NewDict()
    server("version") = version
    server("cluster") = cluster
    server("cluster_kind") = kind
    server("root_cluster") = root
    server("enrollment") = enrollment
    Set ReadServer = server
End Function

Function ServerVersion()
    ' The file version of the server assembly Plugin.DirectoryServices ([MS-RMPRS] 2.3.1.2).
    ' Where it lies is not documented: server_assembly_folders (assumptions, as the agent's).
    Dim found, versions, path, version, distinct, release, first, folders
    ServerVersion = "UNKNOWN"
    folders = Setting("server_assembly_folders", "%SystemDrive%\Inetpub\wwwroot\_wmcs\bin;" & _
        "%SystemDrive%\Inetpub\wwwroot\_wmcs\licensing\bin;%SystemDrive%\Inetpub\wwwroot\_wmcs\certification\bin;" & _
        "%SystemRoot%\assembly\GAC\Plugin.DirectoryServices\*")
    Set found = ServerAssemblies(folders, Setting("server_assembly_suffix", "Plugin.DirectoryServices.dll"))
    If found.Count = 0 Then
        AddNote "RMS server found but no file ending in " & Setting("server_assembly_suffix", "Plugin.DirectoryServices.dll") & _
            " in " & folders & ": server version UNKNOWN; add the folder that holds it to server_assembly_folders under [windows]"
        Exit Function
    End If
    Set versions = NewDict()
    first = ""
    For Each path In found.Keys
        version = FileVersion(path)
        If version <> "" Then
            versions(path) = version
            If first = "" Then first = path
        End If
    Next
    If versions.Count = 0 Then
        AddNote FirstKey(found) & " has no version resource: server version UNKNOWN"
        Exit Function
    End If
    Set distinct = NewDict()
    For Each path In versions.Keys
        distinct(versions(path)) = True
    Next
    If distinct.Count > 1 Then
        ' Which copy the server loads is not documented: picking one would be a guess.
        AddNote "several versions of the server assembly (" & JoinPairs(versions) & "): server version UNKNOWN; " & _
            "narrow server_assembly_folders under [windows] to the folder the server uses"
        Exit Function
    End If
    version = versions(first)
    release = RuleFor(serverRules, knownServerRules, version)
    If release = "" Then
        AddNote "server assembly " & first & " has file version " & version & ", which no rule maps: server version " & _
            "UNKNOWN; if you know its release, add """ & version & """ = RTM|SP1|SP2 under [versions.server]"
        Exit Function
    End If
    ServerVersion = release
End Function

Function ServerAssemblies(folders, suffix)
    ' Files ending in `suffix` in the first folder pattern that has one; a `*` segment stands for
    ' every subfolder (the .NET global assembly cache keeps one folder per version).
    Dim item, pattern, folder, file, found, names
    Set found = NewDict()
    For Each item In Split(folders, ";")
        pattern = Trim(item)
        If pattern <> "" Then
            For Each folder In ExpandFolders(Expand(pattern))
                If fso.FolderExists(folder) Then
                    Set names = NewDict()
                    For Each file In fso.GetFolder(folder).Files
                        If LCase(Right(file.Name, Len(suffix))) = LCase(suffix) Then names(file.Name) = True
                    Next
                    For Each file In Sorted(names.Keys)
                        found(fso.BuildPath(folder, file)) = True
                    Next
                End If
            Next
            If found.Count > 0 Then
                Set ServerAssemblies = found
                Exit Function
            End If
        End If
    Next
    Set ServerAssemblies = found
End Function

Function ExpandFolders(pattern)
    Dim segments, segment, current, nextFolders, folder, subfolder
    Set current = NewDict()
    current("") = True
    segments = Split(pattern, "\")
    For Each segment In segments
        If segment <> "" Then
            Set nextFolders = NewDict()
            For Each folder In current.Keys
                If segment = "*" Then
                    If fso.FolderExists(folder) Then
                        For Each subfolder In fso.GetFolder(folder).SubFolders
                            nextFolders(fso.BuildPath(folder, subfolder.Name)) = True
                        Next
                    End If
                ElseIf folder = "" Then
                    nextFolders(segment) = True
                Else
                    nextFolders(folder & "\" & segment) = True
                End If
            Next
            Set current = nextFolders
        End If
    Next
    ExpandFolders = Sorted(current.Keys)
End Function

Function ServerCluster(key)
    ' No documented value holds a cluster's URL (Cc747614, Cc747607): the cluster's name and port
    ' come from the registry, its URL from [clusters] or server_cluster.
    Dim configured, names, name, url
    configured = Setting("server_cluster", "")
    If configured <> "" Then
        ServerCluster = NormalizeUrl(configured)
        If ServerCluster = "" Then Fail EXIT_CONFIG, "server_cluster: expected a URL, got """ & configured & """"
        Exit Function
    End If
    Set names = ClusterNames(key)
    If names.Count = 0 Then
        Fail EXIT_CLUSTER, "RMS server found but its cluster cannot be told: " & key & "\" & KEY_PROTECTION & _
            " holds no PASSWORDDERIVEDKEY_<database server>_DRMS_CONFIG_<cluster name>_<port> value and there is no " & _
            "DRMS_Logging_<cluster name>_<port> service; pass /server_cluster:URL"
    End If
    If names.Count > 1 Then
        Fail EXIT_CLUSTER, "RMS server found but the registry names several clusters (" & Join(Sorted(names.Keys), ", ") & _
            "): pass /server_cluster:URL of the one this server belongs to"
    End If
    name = FirstKey(names)
    If clusterUrls.Exists(name) Then
        ServerCluster = NormalizeUrl(clusterUrls(name))
        Exit Function
    End If
    ServerCluster = URN_PREFIX & name
    AddNote "cluster """ & Left(name, InStrRev(name, ":") - 1) & """ port " & Mid(name, InStrRev(name, ":") + 1) & _
        " is reported as " & URN_PREFIX & name & ": no registry value holds its URL; add """ & name & _
        """ = https://... under [clusters] to name it by its URL"
End Function

Function ClusterNames(key)
    ' The KeyProtection value names, else the logging service keys (domain.md).
    Dim names, name, re, match
    Set names = NewDict()
    Set re = New RegExp
    re.IgnoreCase = True
    re.Pattern = "^PASSWORDDERIVEDKEY_(.+)_DRMS_CONFIG_(.+)_(\d{1,5})$"
    For Each name In ValueNames(key & "\" & KEY_PROTECTION).Keys
        AddClusterName names, re, Trim(name), 1
    Next
    If names.Count = 0 Then
        re.Pattern = "^DRMS_Logging_(.+)_(\d{1,5})$"
        For Each name In SubKeys(SERVICES_KEY).Keys
            AddClusterName names, re, Trim(name), 0
        Next
    End If
    Set ClusterNames = names
End Function

Sub AddClusterName(names, re, text, first)
    Dim matches, name, port
    Set matches = re.Execute(text)
    If matches.Count = 0 Then Exit Sub
    name = LCase(Trim(matches(0).SubMatches(first)))
    port = matches(0).SubMatches(first + 1)
    If name <> "" And IsPort(port) Then names(name & ":" & CLng(port)) = True
End Sub

' --- client ----------------------------------------------------------------------------------------

Function ReadClient(windowsVersion)
    Dim msdrm, present, product, raw, version, users, client
    Set ReadClient = Nothing
    Set client = NewDict()
    If windowsVersion >= 6 Then
        ' D15: from Vista on Windows ships its own RMS client, none of RTM/SP1/SP2, self-activating.
        version = "BUILTIN"
        users = ActivatedUsers(Setting("builtin_profile_certificate", "AppData\Local\Microsoft\DRM\CERT-Machine.drm"))
    Else
        msdrm = MsdrmPath()
        present = fso.FileExists(msdrm)
        product = Sp2Product()
        If Not present And product = "" Then Exit Function
        raw = ""
        If present Then raw = FileVersion(msdrm)
        If product <> "" Then
            version = "SP2"  ' Cc747749: the SP2 client installs as this product.
        ElseIf raw = "" Then
            AddNote "RMS client found but " & msdrm & " has no version resource: client version UNKNOWN"
            version = "UNKNOWN"
        Else
            ' No client version is published (domain.md): only the operator's rules map it.
            version = RuleFor(clientRules, Nothing, raw)
            If version = "" Then
                AddNote "msdrm.dll " & raw & " (" & msdrm & ") maps to no release: client version UNKNOWN; once you " & _
                    "know its release, add """ & raw & """ = RTM|SP1|SP2 under [versions.client]"
                version = "UNKNOWN"
            End If
        End If
        users = ActivatedUsers(Setting("profile_certificate", "Local Settings\Application Data\Microsoft\DRM\CERT-Machine.drm"))
    End If
    client("version") = version
    client("activation") = Activation(version, users)
    client("cluster") = ClientCluster()
    client("activated_users") = users
    Set ReadClient = client
End Function

Function MsdrmPath()
    MsdrmPath = Expand(Setting("msdrm", "%SystemRoot%\system32\msdrm.dll"))
End Function

Function Sp2Product()
    Dim base, name, shown
    Sp2Product = ""
    For Each base In Array(UNINSTALL_KEY, "SOFTWARE\Wow6432Node\Microsoft\Windows\CurrentVersion\Uninstall")
        For Each name In SubKeys(base).Keys
            shown = TextValue(base & "\" & name, "DisplayName")
            If StrComp(shown, SP2_CLIENT_PRODUCT, vbTextCompare) = 0 Then
                Sp2Product = base & "\" & name
                Exit Function
            End If
        Next
    Next
End Function

Function ActivatedUsers(certificate)
    ' D17: from SP1 on every user has a machine certificate of their own, in their profile.
    ' Counts the user profiles (not LocalSystem, LocalService, NetworkService) that hold one;
    ' -1 when a profile cannot be read (activation is then unknown, never guessed).
    Dim sid, profile, count, profiles, denied, path
    ActivatedUsers = -1
    If Not KeyExists(PROFILE_LIST_KEY) Then
        AddNote PROFILE_LIST_KEY & " does not exist: activation unknown"
        Exit Function
    End If
    count = 0
    profiles = 0
    denied = ""
    For Each sid In SubKeys(PROFILE_LIST_KEY).Keys
        Select Case UCase(sid)
            Case "S-1-5-18", "S-1-5-19", "S-1-5-20"
            Case Else
                profile = Expand(TextValue(PROFILE_LIST_KEY & "\" & sid, "ProfileImagePath"))
                If profile <> "" Then
                    profiles = profiles + 1
                    path = profile & "\" & certificate
                    If fso.FileExists(path) Then
                        count = count + 1
                    ElseIf CannotTell(path) Then
                        If denied <> "" Then denied = denied & ", "
                        denied = denied & profile
                    End If
                End If
        End Select
    Next
    If denied <> "" Then
        AddNote "cannot read " & certificate & " in user profile(s) " & denied & ": activation unknown; run the " & _
            "script as SYSTEM or an administrator (a user's logon script cannot read the other users' profiles)"
        Exit Function
    End If
    ActivatedUsers = count
End Function

Function CannotTell(path)
    ' FileExists also answers False for a file this account may not see: list the deepest folder
    ' of the path that exists; if that is refused, its absence says nothing.
    Dim folder, probe
    CannotTell = False
    folder = fso.GetParentFolderName(path)
    Do While folder <> "" And Not fso.FolderExists(folder)
        folder = fso.GetParentFolderName(folder)
    Loop
    If folder = "" Then Exit Function
    On Error Resume Next
    probe = fso.GetFolder(folder).Files.Count
    If Err.Number <> 0 Then CannotTell = True
    Err.Clear
    On Error GoTo 0
End Function

Function Activation(version, users)
    Dim machine
    If users < 0 Or version = "UNKNOWN" Then
        Activation = "unknown"
    ElseIf version = "SP1" Or version = "SP2" Or version = "BUILTIN" Then
        ' D10, D15, D17
        If users > 0 Then Activation = "self" Else Activation = "none"
    ElseIf users > 0 Then
        Activation = "internet"  ' D10: an RTM client activates over the internet
    Else
        ' D17: per user only from SP1 on; where an RTM client's machine certificate lies is not
        ' documented.
        machine = Expand(Setting("rtm_machine_certificate", ""))
        If machine = "" Then
            AddNote "RTM client with no per-user machine certificate: an RTM client's is per machine (D17: per " & _
                "user from SP1 on) and where it lies is not documented, so activation is unknown; set " & _
                "rtm_machine_certificate under [windows] to its path once confirmed on an RTM client"
            Activation = "unknown"
        ElseIf fso.FileExists(machine) Then
            Activation = "internet"
        ElseIf CannotTell(machine) Then
            AddNote "cannot read " & machine & ": activation unknown"
            Activation = "unknown"
        Else
            Activation = "none"
        End If
    End If
End Function

Function ClientCluster()
    Dim path, raw, configured
    path = SoftwareKey(SERVICE_LOCATION_KEY) & "\EnterprisePublishing"
    raw = TextValue(path, "")
    If raw <> "" Then
        ClientCluster = NormalizeUrl(raw)
        If ClientCluster = "" Then Fail EXIT_READ, path & " (Default): expected a URL, got """ & raw & """"
        Exit Function
    End If
    configured = Setting("client_cluster", "")
    ClientCluster = ""
    If configured <> "" Then
        ClientCluster = NormalizeUrl(configured)
        If ClientCluster = "" Then Fail EXIT_CONFIG, "client_cluster: expected a URL, got """ & configured & """"
    End If
End Function

Sub NotePreProduction(serverFound)
    Dim where, hierarchy
    where = ""
    If serverFound Then
        If TextValue(SoftwareKey(DRMS_KEY), "UddiProvider") <> "" Then where = SoftwareKey(DRMS_KEY) & " UddiProvider is set"
    End If
    hierarchy = RegistryValue(SoftwareKey(UDRM_KEY), "Hierarchy")
    If CStr(hierarchy) = "1" Then
        If where <> "" Then where = where & "; "
        where = where & UDRM_KEY & " Hierarchy = 1"
    End If
    If where <> "" Then AddNote "pre-production hierarchy (" & where & "): these facts describe a test deployment"
End Sub

' --- version rules (the agent's version map: longest prefix wins, the .ini's beats a built-in) ---------

Function RuleFor(configured, known, version)
    Dim best, bestLength, bestConfigured, prefix, length
    RuleFor = ""
    If Not IsDotted(version) Then Exit Function
    bestLength = -1
    bestConfigured = False
    If Not known Is Nothing Then
        For Each prefix In known.Keys
            length = PrefixLength(prefix, version)
            If length > bestLength Then
                bestLength = length
                best = known(prefix)
            End If
        Next
    End If
    For Each prefix In configured.Keys
        length = PrefixLength(prefix, version)
        If length >= bestLength And length > 0 Then
            bestLength = length
            best = configured(prefix)
        End If
    Next
    If bestLength > 0 Then RuleFor = best
End Function

Function PrefixLength(prefix, version)
    ' The number of parts of `prefix` when it is a prefix of `version` (leading zeros do not
    ' matter: 5.2.3790.0134 is 5.2.3790.134), else -1.
    Dim p, v, i
    PrefixLength = -1
    p = Split(prefix, ".")
    v = Split(version, ".")
    If UBound(p) > UBound(v) Then Exit Function
    For i = 0 To UBound(p)
        If CDbl(p(i)) <> CDbl(v(i)) Then Exit Function
    Next
    PrefixLength = UBound(p) + 1
End Function

Function IsDotted(text)
    Dim re
    Set re = New RegExp
    re.Pattern = "^\d{1,9}(\.\d{1,9})*$"
    IsDotted = re.Test(Trim(text))
End Function

Function IsPort(text)
    IsPort = False
    If IsDotted(text) And InStr(text, ".") = 0 Then IsPort = (CLng(text) >= 1 And CLng(text) <= 65535)
End Function

' --- cluster URLs (the agent's normalize_cluster_url) ----------------------------------------------

Function NormalizeUrl(text)
    ' Lower-case scheme and host, no default port, no trailing slash, no /_wmcs/... service path;
    ' http:// when no scheme is given (RMS's default). "" when it is no http(s) URL.
    Dim value, scheme, rest, cut, i, authority, path, at, host, port, closing, re, netloc, service
    NormalizeUrl = ""
    value = Trim(text)
    If InStr(value, "://") = 0 Then value = "http://" & value
    scheme = LCase(Left(value, InStr(value, "://") - 1))
    rest = Mid(value, InStr(value, "://") + 3)
    If scheme <> "http" And scheme <> "https" Then Exit Function
    cut = Len(rest) + 1
    For i = 1 To Len(rest)
        If InStr("/?#", Mid(rest, i, 1)) > 0 Then
            cut = i
            Exit For
        End If
    Next
    authority = Left(rest, cut - 1)
    path = Mid(rest, cut)
    For i = 1 To Len(path)
        If InStr("?#", Mid(path, i, 1)) > 0 Then
            path = Left(path, i - 1)
            Exit For
        End If
    Next
    at = InStrRev(authority, "@")
    If at > 0 Then authority = Mid(authority, at + 1)
    port = ""
    Set re = New RegExp
    If Left(authority, 1) = "[" Then
        closing = InStr(authority, "]")
        If closing = 0 Then Exit Function
        host = LCase(Mid(authority, 2, closing - 2))
        If Mid(authority, closing + 1, 1) = ":" Then port = Mid(authority, closing + 2)
        re.Pattern = "^[0-9a-f:.]*:[0-9a-f:.]*$"
    Else
        If InStrRev(authority, ":") > 0 Then
            host = LCase(Left(authority, InStrRev(authority, ":") - 1))
            port = Mid(authority, InStrRev(authority, ":") + 1)
        Else
            host = LCase(authority)
        End If
        re.Pattern = "^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
    End If
    If Not re.Test(host) Then Exit Function
    If port <> "" Then
        If Not IsDotted(port) Or InStr(port, ".") > 0 Then Exit Function
        If CLng(port) > 65535 Then Exit Function
        port = CStr(CLng(port))
    End If
    If InStr(host, ":") > 0 Then host = "[" & host & "]"
    netloc = host
    If port <> "" And Not ((scheme = "http" And port = "80") Or (scheme = "https" And port = "443")) Then
        netloc = host & ":" & port
    End If
    service = InStr(1, path, "/_wmcs", vbTextCompare)
    If service > 0 Then path = Left(path, service - 1)
    Do While Right(path, 1) = "/"
        path = Left(path, Len(path) - 1)
    Loop
    NormalizeUrl = scheme & "://" & netloc & path
End Function

' --- the facts file --------------------------------------------------------------------------------

Function FactsJson(hostId, hostName, forest, server, client)
    Dim json
    json = "{" & vbCrLf & "  ""host_id"": " & JsonString(hostId) & "," & vbCrLf & _
        "  ""hostname"": " & JsonString(hostName) & "," & vbCrLf & _
        "  ""forest"": " & JsonString(forest) & "," & vbCrLf
    If server Is Nothing Then
        json = json & "  ""server"": null," & vbCrLf
    Else
        json = json & "  ""server"": {""version"": " & JsonString(server("version")) & _
            ", ""cluster"": " & JsonString(server("cluster")) & _
            ", ""cluster_kind"": " & JsonString(server("cluster_kind")) & _
            ", ""root_cluster"": " & JsonOrNull(server("root_cluster")) & _
            ", ""enrollment"": " & JsonString(server("enrollment")) & "}," & vbCrLf
    End If
    If client Is Nothing Then
        json = json & "  ""client"": null" & vbCrLf
    Else
        json = json & "  ""client"": {""version"": " & JsonString(client("version")) & _
            ", ""activation"": " & JsonString(client("activation")) & _
            ", ""cluster"": " & JsonOrNull(client("cluster"))
        ' Optional (D17): left out when the profiles could not be read.
        If client("activated_users") >= 0 Then json = json & ", ""activated_users"": " & CStr(client("activated_users"))
        json = json & "}" & vbCrLf
    End If
    FactsJson = json & "}" & vbCrLf
End Function

Function JsonOrNull(text)
    If text = "" Then JsonOrNull = "null" Else JsonOrNull = JsonString(text)
End Function

Function JsonString(text)
    ' The file is written as UTF-16 with a byte order mark (which the spool reads), so only
    ' quotes, backslashes and control characters need escaping.
    Dim i, c, out
    out = ""
    For i = 1 To Len(text)
        c = Mid(text, i, 1)
        If c = """" Then
            out = out & "\"""
        ElseIf c = "\" Then
            out = out & "\\"
        ElseIf c < " " Then
            out = out & "\u00" & Right("0" & Hex(Asc(c)), 2)
        Else
            out = out & c
        End If
    Next
    JsonString = """" & out & """"
End Function

Function WriteFacts(folder, hostId, document)
    ' NAME.tmp first, then renamed to NAME.json: the spool never sees half a file. A unique name
    ' per run: no file is replaced, and runs the spool has not taken yet go in order.
    Dim base, temporary, target, stream
    If Not fso.FolderExists(folder) Then Fail EXIT_WRITE, "output folder " & folder & " does not exist or cannot be reached"
    Randomize
    base = fso.BuildPath(folder, SafeName(hostId) & "-" & Stamp() & "-" & Right("000" & Hex(Int(Rnd * 65536)), 4))
    temporary = base & ".tmp"
    target = base & ".json"
    On Error Resume Next
    Set stream = fso.CreateTextFile(temporary, True, True)
    If Err.Number = 0 Then
        stream.Write document
        stream.Close
    End If
    If Err.Number = 0 Then fso.MoveFile temporary, target
    If Err.Number <> 0 Then
        Dim message
        message = Err.Description & " (error " & Hex(Err.Number) & ")"
        Err.Clear
        If fso.FileExists(temporary) Then fso.DeleteFile temporary, True
        On Error GoTo 0
        Fail EXIT_WRITE, "cannot write " & target & ": " & message
    End If
    On Error GoTo 0
    WriteFacts = target
End Function

Function SafeName(text)
    Dim i, c, out
    out = ""
    For i = 1 To Len(text)
        c = Mid(text, i, 1)
        If InStr("abcdefghijklmnopqrstuvwxyz0123456789-_.", LCase(c)) > 0 Then out = out & c Else out = out & "_"
    Next
    SafeName = Left(out, 100)
End Function

Function Stamp()
    Dim t
    t = Now
    Stamp = Year(t) & Right("0" & Month(t), 2) & Right("0" & Day(t), 2) & "T" & Right("0" & Hour(t), 2) & _
        Right("0" & Minute(t), 2) & Right("0" & Second(t), 2)
End Function

' --- registry --------------------------------------------------------------------------------------

Function RegistryValue(key, name)
    ' A value of HKLM\key (name "" = the key's default value), or Empty when it is not there.
    On Error Resume Next
    RegistryValue = Empty
    RegistryValue = shell.RegRead("HKLM\" & key & "\" & name)
    If Err.Number <> 0 Then RegistryValue = Empty
    Err.Clear
    On Error GoTo 0
End Function

Function TextValue(key, name)
    Dim value
    value = RegistryValue(key, name)
    TextValue = ""
    If VarType(value) = vbString Then TextValue = Trim(value)
End Function

Function SoftwareKey(key)
    ' HKLM\SOFTWARE\... or, when only that exists, HKLM\SOFTWARE\Wow6432Node\... (a 32-bit
    ' program on 64-bit Windows, D15).
    Dim alternative
    SoftwareKey = key
    If UCase(Left(key, 9)) <> "SOFTWARE\" Then Exit Function
    If KeyExists(key) Then Exit Function
    alternative = "SOFTWARE\Wow6432Node\" & Mid(key, 10)
    If KeyExists(alternative) Then SoftwareKey = alternative
End Function

Function KeyExists(key)
    KeyExists = Not Listing(key) Is Nothing
End Function

Function SubKeys(key)
    Dim found
    Set found = Listing(key)
    If found Is Nothing Then Set SubKeys = NewDict() Else Set SubKeys = found("keys")
End Function

Function ValueNames(key)
    Dim found
    Set found = Listing(key)
    If found Is Nothing Then Set ValueNames = NewDict() Else Set ValueNames = found("values")
End Function

Function Listing(key)
    ' {keys, values} of HKLM\key, or Nothing when the key does not exist. WMI's StdRegProv first
    ' (built into every Windows this script is for); reg.exe where WMI cannot (a damaged WMI
    ' repository; Wine). Cached: a run lists each key once.
    Dim found
    If regCache.Exists(LCase(key)) Then
        Set Listing = regCache(LCase(key))
        Exit Function
    End If
    If registryMode = "reg" Or registryMode = "auto-reg" Then
        Set found = RegExeListing(key)
    Else
        Set found = WmiListing(key)
        ' WmiListing switches "auto" to "auto-reg" when WMI cannot list keys here.
        If registryMode = "auto-reg" Then Set found = RegExeListing(key)
    End If
    ' (Wine's VBScript cannot `Set d(key) = object`; Add works everywhere.)
    regCache.Add LCase(key), found
    Set Listing = found
End Function

Function NewListing(subkeyNames, valueNames)
    Dim listed
    Set listed = NewDict()
    listed.Add "keys", subkeyNames
    listed.Add "values", valueNames
    Set NewListing = listed
End Function

Function WmiListing(key)
    Dim rc, keys, values, types, name, failure, subkeyNames, valueNames
    Set WmiListing = Nothing
    failure = ""
    On Error Resume Next
    If wmiRegistry Is Nothing Then Set wmiRegistry = GetObject("winmgmts:{impersonationLevel=impersonate}!\\.\root\default:StdRegProv")
    If Err.Number = 0 Then rc = wmiRegistry.EnumKey(HKLM, key, keys)
    If Err.Number = 0 And rc = 0 Then rc = wmiRegistry.EnumValues(HKLM, key, values, types)
    If Err.Number <> 0 Then failure = "error " & Hex(Err.Number) & " " & Err.Description
    Err.Clear
    On Error GoTo 0
    If failure <> "" Then
        If registryMode = "wmi" Then Fail EXIT_READ, "WMI StdRegProv cannot list HKLM\" & key & " (" & failure & "); try /registry:reg"
        ' auto: use reg.exe from now on.
        registryMode = "auto-reg"
        Exit Function
    End If
    If rc = 2 Then Exit Function  ' the key does not exist
    If rc <> 0 Then Fail EXIT_READ, "cannot read HKLM\" & key & " (StdRegProv error " & rc & "): run as SYSTEM or an administrator"
    Set subkeyNames = NewDict()
    Set valueNames = NewDict()
    If IsArray(keys) Then
        For Each name In keys
            subkeyNames(name) = True
        Next
    End If
    If IsArray(values) Then
        For Each name In values
            valueNames(name) = True
        Next
    End If
    Set WmiListing = NewListing(subkeyNames, valueNames)
End Function

Function RegExeListing(key)
    ' `reg query HKLM\key` (no /s): the key's subkeys as full paths, its values as
    ' "    NAME    REG_TYPE    DATA" (tabs on XP). Exit code 1: the key does not exist.
    Dim output, rc, stream, line, prefix, re, matches, text, subkeyNames, valueNames
    Set RegExeListing = Nothing
    output = fso.BuildPath(Expand("%TEMP%"), "rmsfleet-reg-" & Right("000" & Hex(Int(Rnd * 65536)), 4) & ".txt")
    rc = shell.Run("cmd.exe /c reg query ""HKLM\" & key & """ > """ & output & """ 2>&1", 0, True)
    text = ""
    If fso.FileExists(output) Then
        Set stream = OpenText(output)
        If Not stream.AtEndOfStream Then text = stream.ReadAll
        stream.Close
        fso.DeleteFile output, True
    End If
    If rc <> 0 Then
        If InStr(1, text, "denied", vbTextCompare) > 0 Then
            Fail EXIT_READ, "cannot read HKLM\" & key & " (reg.exe: access denied): run as SYSTEM or an administrator"
        End If
        If InStr(1, text, "recognized", vbTextCompare) > 0 Or rc = 9009 Then
            Fail EXIT_READ, "neither WMI StdRegProv nor reg.exe can list the registry here (on Windows 2000, install " & _
                "the Support Tools for reg.exe)"
        End If
        Exit Function
    End If
    Set subkeyNames = NewDict()
    Set valueNames = NewDict()
    prefix = "HKEY_LOCAL_MACHINE\" & key & "\"
    Set re = New RegExp
    re.Pattern = "^\s+(.+?)\s+(REG_[A-Z_]+)(\s|$)"
    For Each line In Split(Replace(text, vbCr, ""), vbLf)
        If StrComp(Left(line, Len(prefix)), prefix, vbTextCompare) = 0 Then
            If InStr(Mid(line, Len(prefix) + 1), "\") = 0 And Trim(Mid(line, Len(prefix) + 1)) <> "" Then
                subkeyNames(Trim(Mid(line, Len(prefix) + 1))) = True
            End If
        Else
            Set matches = re.Execute(line)
            If matches.Count > 0 Then valueNames(matches(0).SubMatches(0)) = True
        End If
    Next
    Set RegExeListing = NewListing(subkeyNames, valueNames)
End Function

' --- files -----------------------------------------------------------------------------------------

Function FileVersion(path)
    ' GetFileVersion: "" when the file is missing or has no version resource.
    On Error Resume Next
    FileVersion = ""
    If fso.FileExists(path) Then FileVersion = fso.GetFileVersion(path)
    If Err.Number <> 0 Then FileVersion = ""
    Err.Clear
    On Error GoTo 0
End Function

Function OpenText(path)
    ' ANSI text (the .ini, reg.exe's output).
    On Error Resume Next
    Set OpenText = fso.OpenTextFile(path, 1, False, 0)
    If Err.Number <> 0 Then
        Dim message
        message = Err.Description
        On Error GoTo 0
        Fail EXIT_CONFIG, "cannot read " & path & ": " & message
    End If
    On Error GoTo 0
End Function

Function Expand(text)
    ' (Wine returns the terminating NUL as part of the string.)
    Expand = Replace(shell.ExpandEnvironmentStrings(text), Chr(0), "")
End Function

' --- small helpers ---------------------------------------------------------------------------------

Function NewDict()
    Dim d
    Set d = CreateObject("Scripting.Dictionary")
    d.CompareMode = vbTextCompare
    Set NewDict = d
End Function

Function FirstKey(d)
    Dim k
    For Each k In d.Keys
        FirstKey = k
        Exit Function
    Next
End Function

Function Sorted(items)
    ' Insertion sort of an array (case-insensitive): few items, and no ReDim needed.
    Dim i, j, value
    For i = 1 To UBound(items)
        value = items(i)
        j = i - 1
        Do While j >= 0
            If StrComp(items(j), value, vbTextCompare) <= 0 Then Exit Do
            items(j + 1) = items(j)
            j = j - 1
        Loop
        items(j + 1) = value
    Next
    Sorted = items
End Function

Function JoinPairs(d)
    Dim k, out
    out = ""
    For Each k In d.Keys
        If out <> "" Then out = out & ", "
        out = out & k & " " & d(k)
    Next
    JoinPairs = out
End Function

' --- messages --------------------------------------------------------------------------------------

Sub AddNote(text)
    If notes.Exists(text) Then Exit Sub
    notes(text) = True
    Tell "note: " & text
End Sub

Sub Say(text)
    If consoleHost Then WScript.Echo text
    WriteLog text
End Sub

Sub Tell(text)
    ' Standard error where the host has one (cscript on Windows), else standard output.
    Dim shown
    shown = False
    If consoleHost Then
        On Error Resume Next
        WScript.StdErr.WriteLine text
        shown = (Err.Number = 0)
        Err.Clear
        On Error GoTo 0
        If Not shown Then WScript.Echo text
    End If
    WriteLog text
End Sub

Sub WriteLog(text)
    Dim stream
    If logFile = "" Then Exit Sub
    On Error Resume Next
    Set stream = fso.OpenTextFile(logFile, 8, True, 0)
    stream.WriteLine Stamp() & " " & text
    stream.Close
    Err.Clear
    On Error GoTo 0
End Sub

Sub Fail(code, text)
    Tell "error: " & text
    WScript.Quit code
End Sub
